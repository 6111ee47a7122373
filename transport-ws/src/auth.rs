//! Token authentication: bearer header or `token` query parameter, compared in constant time.

use http::HeaderMap;
use http::header::AUTHORIZATION;

/// How clients authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// Every upgrade must carry this token.
    Token(String),
    /// No authentication (`--insecure-no-auth`, loopback binds only).
    Disabled,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::Disabled => f.write_str("Disabled"),
        }
    }
}

/// Equality of two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff = expected.len() ^ presented.len();
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= usize::from(e ^ p);
    }
    std::hint::black_box(diff) == 0
}

/// Decodes `%XX` escapes and `+` of a query component.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Encodes a query component: unreserved characters stay, everything else becomes `%XX`.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Auth {
    /// Whether a request with these headers and this query string may connect.
    pub(crate) fn allows(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        let Auth::Token(token) = self else {
            return true;
        };
        let expected = token.as_bytes();
        let from_header = headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().as_bytes().to_vec())
            });
        let from_query = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .filter(|(name, _)| *name == "token")
            .map(|(_, value)| percent_decode(value));
        let mut ok = false;
        for presented in from_header.chain(from_query) {
            ok |= constant_time_eq(expected, &presented);
        }
        ok
    }

    /// The query string to append to the server URL (`?token=…`), or nothing.
    pub(crate) fn url_query(&self) -> String {
        match self {
            Auth::Token(token) => format!("?token={}", percent_encode(token)),
            Auth::Disabled => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn tokens_are_checked_from_header_or_query() {
        let auth = Auth::Token("s3cret/+x".into());
        let mut headers = HeaderMap::new();
        assert!(!auth.allows(&headers, None));
        assert!(!auth.allows(&headers, Some("token=s3cret")));
        assert!(auth.allows(&headers, Some("a=1&token=s3cret%2F%2Bx")));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
        assert!(!auth.allows(&headers, None));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer s3cret/+x"));
        assert!(auth.allows(&headers, None));
        assert!(Auth::Disabled.allows(&HeaderMap::new(), None));
        assert_eq!(auth.url_query(), "?token=s3cret%2F%2Bx");
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(percent_decode("a%20b+c"), b"a b c");
        assert_eq!(percent_decode("100%"), b"100%");
        assert_eq!(percent_decode("%zz"), b"%zz");
    }
}

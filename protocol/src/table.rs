//! The method table: every request method and notification, declared once.
//!
//! The schema bundle, the example messages and the server's dispatch check are
//! all derived from [`visit`], so a method cannot be left out of any of them.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fs::*;
use crate::names::{method, notification};
use crate::types::*;

/// A type that travels on the wire: serde both ways, a JSON Schema, and an example value.
pub trait WireType:
    Serialize + DeserializeOwned + JsonSchema + Example + Send + Sync + 'static
{
}
impl<T: Serialize + DeserializeOwned + JsonSchema + Example + Send + Sync + 'static> WireType
    for T
{
}

/// A typical value of a wire type, used for the example messages and their tests.
pub trait Example {
    /// A typical value.
    fn example() -> Self;
}

/// A request method: its name, params type and result type.
pub trait Method: 'static {
    /// The method name on the wire.
    const NAME: &'static str;
    /// The `params` type.
    type Params: WireType;
    /// The `result` type.
    type Result: WireType;
}

/// Who sends a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by the client to the server.
    ClientToServer,
    /// Sent by the server to the client.
    ServerToClient,
}

/// A notification: its name, direction and params type.
pub trait Notification: 'static {
    /// The notification name on the wire.
    const NAME: &'static str;
    /// Who sends it.
    const DIRECTION: Direction;
    /// The `params` type.
    type Params: WireType;
}

/// Receives every entry of the method table, in table order.
pub trait TableVisitor {
    /// Called once per request method.
    fn method<M: Method>(&mut self);
    /// Called once per notification.
    fn notification<N: Notification>(&mut self);
}

macro_rules! table {
    (
        methods { $( $(#[$mdoc:meta])* $m:ident = $mname:expr => $params:ty, $result:ty; )* }
        notifications { $( $(#[$ndoc:meta])* $n:ident = $nname:expr, $dir:ident => $nparams:ty; )* }
    ) => {
        $(
            $(#[$mdoc])*
            #[derive(Debug)]
            pub enum $m {}
            impl Method for $m {
                const NAME: &'static str = $mname;
                type Params = $params;
                type Result = $result;
            }
        )*
        $(
            $(#[$ndoc])*
            #[derive(Debug)]
            pub enum $n {}
            impl Notification for $n {
                const NAME: &'static str = $nname;
                const DIRECTION: Direction = Direction::$dir;
                type Params = $nparams;
            }
        )*

        /// Calls the visitor for every method, then every notification, in table order.
        pub fn visit<V: TableVisitor>(visitor: &mut V) {
            $( visitor.method::<$m>(); )*
            $( visitor.notification::<$n>(); )*
        }
    };
}

table! {
    methods {
        /// `initialize`: open or resume a session.
        Initialize = method::INITIALIZE => InitializeParams, InitializeResult;
        /// `process/start`: spawn a process.
        ProcessStart = method::PROCESS_START => ProcessStartParams, ProcessStartResult;
        /// `process/read`: read retained output from a cursor, optionally long-polling.
        ProcessRead = method::PROCESS_READ => ProcessReadParams, ProcessReadResult;
        /// `process/write`: write to a process's stdin.
        ProcessWrite = method::PROCESS_WRITE => ProcessWriteParams, ProcessWriteResult;
        /// `process/closeStdin`: close a process's stdin.
        ProcessCloseStdin = method::PROCESS_CLOSE_STDIN => ProcessCloseStdinParams, ProcessCloseStdinResult;
        /// `process/signal`: send a signal to a process group.
        ProcessSignal = method::PROCESS_SIGNAL => ProcessSignalParams, ProcessSignalResult;
        /// `process/resize`: resize a process's terminal.
        ProcessResize = method::PROCESS_RESIZE => ProcessResizeParams, ProcessResizeResult;
        /// `process/terminate`: SIGTERM, then SIGKILL after a grace, to the whole group.
        ProcessTerminate = method::PROCESS_TERMINATE => ProcessTerminateParams, ProcessTerminateResult;
        /// `process/list`: every process the session retains.
        ProcessList = method::PROCESS_LIST => ProcessListParams, ProcessListResult;
        /// `process/release`: the client needs nothing more of a process; forget it once closed.
        ProcessRelease = method::PROCESS_RELEASE => ProcessReleaseParams, ProcessReleaseResult;
        /// `session/close`: end the session now, terminating every process, instead of detaching.
        SessionClose = method::SESSION_CLOSE => SessionCloseParams, SessionCloseResult;
        // fs/* (SPEC section 12)
        /// `fs/read`: read bytes of a file from an offset.
        FsRead = method::FS_READ => FsReadParams, FsReadResult;
        /// `fs/write`: write bytes to a file (at an offset, appended, or replacing it, atomically if asked).
        FsWrite = method::FS_WRITE => FsWriteParams, FsWriteResult;
        /// `fs/stat`: what a path names, its size, mode and mtime.
        FsStat = method::FS_STAT => FsStatParams, FsStatResult;
        /// `fs/list`: the entries of a directory.
        FsList = method::FS_LIST => FsListParams, FsListResult;
        /// `fs/mkdir`: create a directory.
        FsMkdir = method::FS_MKDIR => FsMkdirParams, FsMkdirResult;
        /// `fs/remove`: remove a file, symlink or directory.
        FsRemove = method::FS_REMOVE => FsRemoveParams, FsRemoveResult;
        /// `fs/rename`: rename(2).
        FsRename = method::FS_RENAME => FsRenameParams, FsRenameResult;
        /// `fs/chmod`: set the permission bits of a path.
        FsChmod = method::FS_CHMOD => FsChmodParams, FsChmodResult;
    }
    notifications {
        /// `initialized`: the client completes the handshake.
        Initialized = notification::INITIALIZED, ClientToServer => InitializedParams;
        /// `process/output`: one output chunk.
        ProcessOutput = notification::PROCESS_OUTPUT, ServerToClient => ProcessOutputNotification;
        /// `process/exited`: the child's wait status.
        ProcessExited = notification::PROCESS_EXITED, ServerToClient => ProcessExitedNotification;
        /// `process/closed`: the last event of a process.
        ProcessClosed = notification::PROCESS_CLOSED, ServerToClient => ProcessClosedNotification;
        /// `process/ack`: output of a process consumed up to a seq (flow control, SPEC section 13).
        ProcessAck = notification::PROCESS_ACK, ClientToServer => ProcessAckNotification;
    }
}

/// The names of every request method, in table order.
pub fn method_names() -> Vec<&'static str> {
    struct Names(Vec<&'static str>);
    impl TableVisitor for Names {
        fn method<M: Method>(&mut self) {
            self.0.push(M::NAME);
        }
        fn notification<N: Notification>(&mut self) {}
    }
    let mut names = Names(Vec::new());
    visit(&mut names);
    names.0
}

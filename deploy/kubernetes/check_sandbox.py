"""Checks the agent-sandbox example (sandbox.yaml) as far as can be done without its CRD.

kubernetes-validate knows only built-in kinds, and the Sandbox CRD is not in this
repository. So this checks:
  * the resource's apiVersion, kind and the fields of its spec against the Sandbox CRD of
    kubernetes-sigs/agent-sandbox (agents.x-k8s.io, version v1beta1, served and stored;
    fields as its CRD lists them: podTemplate (required; metadata with labels and
    annotations, and a PodSpec), service, shutdownPolicy (Delete|Retain), shutdownTime,
    volumeClaimTemplates, operatingMode (Running|Suspended));
  * the pod template's spec as a core/v1 PodSpec, strictly, with kubernetes-validate
    (the CRD embeds the PodSpec schema there), by validating it as a Pod.

Usage: python3 check_sandbox.py SANDBOX.yaml [KUBERNETES_VERSION]
"""

import sys

import kubernetes_validate
import yaml

SPEC_FIELDS = {
    "podTemplate",
    "service",
    "shutdownPolicy",
    "shutdownTime",
    "volumeClaimTemplates",
    "operatingMode",
}
ENUMS = {
    "shutdownPolicy": {"Delete", "Retain"},
    "operatingMode": {"Running", "Suspended"},
}
TEMPLATE_FIELDS = {"metadata", "spec"}
TEMPLATE_METADATA_FIELDS = {"labels", "annotations"}


def check(resource, version):
    errors = []
    if resource.get("apiVersion") != "agents.x-k8s.io/v1beta1":
        errors.append(f"apiVersion {resource.get('apiVersion')!r} is not agents.x-k8s.io/v1beta1")
    if resource.get("kind") != "Sandbox":
        errors.append(f"kind {resource.get('kind')!r} is not Sandbox")
    if not resource.get("metadata", {}).get("name"):
        errors.append("metadata.name is missing")
    spec = resource.get("spec") or {}
    unknown = set(spec) - SPEC_FIELDS
    if unknown:
        errors.append(f"spec has fields the CRD does not: {sorted(unknown)}")
    if "service" in spec and not isinstance(spec["service"], bool):
        errors.append("spec.service must be a boolean")
    for field, allowed in ENUMS.items():
        if field in spec and spec[field] not in allowed:
            errors.append(f"spec.{field} {spec[field]!r} is not one of {sorted(allowed)}")
    template = spec.get("podTemplate")
    if not isinstance(template, dict) or "spec" not in template:
        errors.append("spec.podTemplate.spec is required")
        return errors
    unknown = set(template) - TEMPLATE_FIELDS
    if unknown:
        errors.append(f"spec.podTemplate has fields the CRD does not: {sorted(unknown)}")
    metadata = template.get("metadata") or {}
    unknown = set(metadata) - TEMPLATE_METADATA_FIELDS
    if unknown:
        errors.append(f"spec.podTemplate.metadata allows only labels and annotations: {sorted(unknown)}")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": resource["metadata"]["name"], **metadata},
        "spec": template["spec"],
    }
    try:
        kubernetes_validate.validate(pod, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        errors.append(f"spec.podTemplate as a Pod: {path}: {e.message}")
    return errors


def main():
    path = sys.argv[1]
    version = sys.argv[2] if len(sys.argv) > 2 else kubernetes_validate.utils.latest_version()
    with open(path) as f:
        resources = [r for r in yaml.safe_load_all(f) if r]
    if not resources:
        print(f"ERROR {path}: no resource")
        return 1
    failed = 0
    for resource in resources:
        errors = check(resource, version)
        name = resource.get("metadata", {}).get("name")
        for error in errors:
            print(f"ERROR {path} sandbox/{name}: {error}")
        if not errors:
            print(f"INFO {path} passed for resource sandbox/{name} (CRD fields, PodSpec against {version})")
        failed |= bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Names, labels and API coordinates shared by the api and the operator.

The CodeSession's name is the session id; everything it owns is named after it.
"""

from __future__ import annotations

import re
import uuid

GROUP = "icee.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "CodeSession"
PLURAL = "codesessions"
SHORT_NAME = "csn"  # `cs` belongs to componentstatuses

DEFAULT_NAMESPACE = "icee-sandbox"

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "icee"
LABEL_COMPONENT = "app.kubernetes.io/component"
COMPONENT_SANDBOX = "sandbox"
LABEL_SESSION = f"{GROUP}/session"
LABEL_LANGUAGE = f"{GROUP}/language"
# Warm pools (issue 12): the SandboxPool a warm pod belongs to until a session
# claims it, and the hash of the template it was built from.
POOL_PLURAL = "sandboxpools"
LABEL_POOL = f"{GROUP}/pool"
LABEL_TEMPLATE_HASH = f"{GROUP}/template-hash"
# When the api claimed a warm pod (RFC 3339), set by the claim with the session label.
ANNOTATION_CLAIMED_AT = f"{GROUP}/claimed-at"
# On a CodeSession: a hash of the client that created it (its API token or address),
# so that every api replica can count a client's sessions from the cluster.
LABEL_CLIENT = f"{GROUP}/client"

# Label selector matching every object the operator creates for sessions.
MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"

# The one container of a sandbox pod; the api attaches to it by this name.
CONTAINER_NAME = "program"
# The only writable path, where the runner writes the source files.
WORKSPACE_DIR = "/workspace"
# The in-sandbox runner (docs/runner.md), the container's command in every sandbox image.
RUNNER_PATH = "/usr/local/bin/icee-runner"

_SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def new_session_id() -> str:
    return str(uuid.uuid4())


def is_session_id(value: str) -> bool:
    """A lowercase UUID4 in canonical form, as `new_session_id` makes them."""
    return bool(_SESSION_ID.match(value))


def validate_session_id(value: str) -> str:
    if not is_session_id(value):
        raise ValueError(f"not a session id (lowercase UUID4 expected): {value[:64]!r}")
    return value


def codesession_name(session_id: str) -> str:
    return validate_session_id(session_id)


def pod_name(session_id: str) -> str:
    return f"run-{validate_session_id(session_id)}"


def session_id_from_pod_name(name: str) -> str | None:
    if not name.startswith("run-"):
        return None
    candidate = name.removeprefix("run-")
    return candidate if is_session_id(candidate) else None


def session_labels(session_id: str) -> dict[str, str]:
    """Labels on everything owned by one session (its Pod)."""
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SESSION: validate_session_id(session_id),
    }

"""Create or update the embedded OpenID Connect provider's users (JSON on stdin).

Input: {"users_file": PATH, "users": [{"name", "password", "groups"}], "replace": bool}.
Prints {"changed": bool, "created": [...]}: the users file is compared before and after
(a user whose password already matches keeps its stored hash, so a second run changes nothing).
"""

import hashlib
import json
import sys
from pathlib import Path

from havre.idp.users import seed_users


def main() -> int:
    request = json.load(sys.stdin)
    path = Path(request["users_file"])
    before = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""
    users = {
        u["name"]: {k: v for k, v in u.items() if k in ("password", "groups", "email")}
        for u in request["users"]
    }
    created = seed_users(path, users, replace=bool(request.get("replace")))
    after = hashlib.sha256(path.read_bytes()).hexdigest()
    print(json.dumps({"changed": before != after, "created": created}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

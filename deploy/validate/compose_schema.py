"""Validates compose files against the compose-spec JSON schema.

The schema is the one the docker-compose 1.29.2 package ships (compose/config/compose_spec.json,
Apache-2.0), installed by validate.sh; `docker compose config` would need the compose plugin,
which is not packaged here. Exits 1 and lists every error when a file does not conform.
"""

import json
import sys
from importlib import metadata

import jsonschema
import yaml


def main(paths):
    # Read as a file of the installed distribution: importing the package would need its
    # dependencies, which are not installed.
    spec = metadata.distribution("docker-compose").locate_file(
        "compose/config/compose_spec.json"
    )
    schema = json.loads(spec.read_text())
    validator = jsonschema.Draft7Validator(schema)
    failed = False
    for path in paths:
        with open(path) as f:
            document = yaml.safe_load(f)
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.path))
        for error in errors:
            where = "/".join(str(p) for p in error.path) or "(top level)"
            print(f"ERROR {path}: {where}: {error.message}", file=sys.stderr)
        if errors:
            failed = True
        else:
            print(f"INFO {path} conforms to the compose-spec schema")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: compose_schema.py FILE...")
    sys.exit(main(sys.argv[1:]))

"""The defaults of a run, each defined once: the command line shows them in --help, and the
use cases, the plan and the applier fall back to them. No imports, so --help stays fast."""

from __future__ import annotations

#: Manifest files or folders read when a command names none.
MANIFESTS: tuple[str, ...] = ("manifests",)
#: State when neither --state, $RECONCILER_STATE nor reconciler.yaml names one.
STATE_PATH = "state/tokens.state.json"
#: The embedded API's database, beside a local state file.
LOCAL_DB_NAME = "local-api.sqlite3"
#: Largest share of managed tokens a plan may delete or replace without --force.
THRESHOLD = 0.3
#: How many API calls apply runs at once.
PARALLELISM = 10
#: How long one exec: destination may run per value before it is killed.
EXEC_TIMEOUT_SECONDS = 60.0
#: How long a command waits for the state lock.
LOCK_TIMEOUT = "0s"
#: How a change the update route can make is made: in-place, or by replacing the token.
UPDATES = "in-place"
#: audit: a token expiring within this many days is `expiring`.
EXPIRING_DAYS = 14
#: audit: a token not used for more than this many days is `unused`.
UNUSED_DAYS = 90

"""Must FAIL the type check: a misspelt constant and a misspelt function are errors,
not ``Any`` (tests/test_downstream.py counts the errors)."""

import portclone

flags = portclone.CLONE_NEWPDI  # error: misspelt CLONE_NEWPID
child = portclone.spawnn(["true"])  # error: misspelt spawn

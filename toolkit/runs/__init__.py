"""Process lifecycle of the servers deploy starts: records, processes, readiness, checks.

`records` (the run record, atomic writes, the lock), `process` (spawn in a new session,
liveness, stop the group, memory), `ready` (the model answers; log tail and likely cause),
`check` (served context, chat, tool call). `toolkit.api.runs` composes them.
"""

"""Pieces shared by the methods: heads, EMA encoders, queues, memory banks, distributed gathers,
shuffle-BN, losses, LARS and per-step schedules. Each is written once here (methods.md §1, §4)."""

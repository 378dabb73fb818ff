"""The compile pipeline, stage by stage (docs/architecture.md, "Data flow"): config, task, prepare,
study, objective, screen, record, select, ship, loop; its CLI commands (compile, demo, report)."""

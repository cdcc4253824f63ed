"""The engine: the closed set of edits (`edits`), the per-pass draft and `apply`
(`draft`), and rules, rule passes, pipelines and instruments (`pipeline`)."""

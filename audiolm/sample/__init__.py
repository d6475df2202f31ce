"""Generation: sampling rules (`rules`), per-family samplers (`pattern_lm`, `moshi`,
`thinker_talker`) and the `--mode=sample` runner (`runner.run`)."""

"""Tasks: what is learnt, apart from the architecture that learns it.

A task module (contract: `audiolm.tasks.base.Task`) owns its batches per split, its loss, its
evaluators and its sample writer; `config.task.name` selects it and `audiolm.config.PAIRS`
declares which model families it can train. Today:

  asr        speech -> transcript (AuT + Thinker of the thinker_talker family)
  codes      next-code LM over multi-codebook tokens (moshi delayed streams, pattern LM)

`audiolm.tasks.synthetic` turns a family's `example_batch` into a resumable dataset (any task
with `data.name="synthetic"`); `audiolm.tasks.evaluators` is the registry of evaluators that
`config.task.evaluators` / `final_evaluators` name.
"""

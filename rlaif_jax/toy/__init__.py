"""The toy world (DESIGN §4): the embedded default run, small enough for a 2-core CPU.

Synthetic posts and noisy TL;DRs (`text`, `summaries`, `world`), the oracle "human" and
the biased bootstrap rater (`oracle`), the generic rating corpus (`rating_corpus`), the
toy off-the-shelf labeler's bootstrap stage and its training examples
(`labeler_bootstrap`, `bootstrap_data`), labeler releases and the shipped one (`release`,
`releases/`), and the toy model presets (`presets`). It plugs into the pipeline through
the same interfaces as real data (seqio sources, gin-selected presets and stages).

The real path never imports this package: only the toy world's gin files (gin/tasks/toy.gin,
gin/sizes/toy.gin, gin/runs/toy_world.gin), its tests, the benchmark and a few lazy,
toy-only gin entry points (the oracle reward and judge) do.
"""

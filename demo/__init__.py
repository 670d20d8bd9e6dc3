"""``make demo``: the whole pipeline on the embedded phantoms (``python -m demo``), and the one helper that builds
``monai.bundle run`` command lines for the demo, the tests and the benchmarks (:mod:`demo.commands`)."""

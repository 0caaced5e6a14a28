"""The robustops benchmark suite.

    python -m bench.run                 # quick suite (what `make bench` runs)
    python -m bench.run --full          # every size and dtype
    python -m bench.run --ops mrelu     # some ops (or whole families: --ops saf,bang,interval)
    python -m bench.run --list          # the families and ops there are

Every op is timed against its pure-PyTorch reference (eager and, mostly, torch.compile'd),
after a correctness check, next to two bandwidth limits measured in the same run:
a copy into a preallocated tensor (``y.copy_(x)``) and into a fresh one
(``x.clone()``); ops that are not differentiable are timed forward only. An op
may also be set against something else it is not checked against (the interval
layers against the plain layer), its implementations timed in alternation. Whole
training steps (the bang family's bang_step: plain, with robustops.bang.BANG, and
with the per-sample-gradient reference; the interval family's IBP and GM-loss
steps and its no-grad IBP forward; the crown family's CROWN-IBP step) are timed in
alternation and reported as times and ratios to a baseline (the plain step or
forward). Results go to bench/results/<device>.{json,md,png}.

Layout:
    run.py       the runner: command line, the FAMILIES registry, the measurement loop
    cases.py     Config, Case and StepCase, the suite's settings and names
    timing.py    timing (also interleaved), bandwidth limits
    checks.py    correctness and saved-memory checks
    targets.py   Target and its value functions
    metadata.py  the machine, torch, compiler flags and CPU load of a run
    report.py    the markdown report and the plot
    thp.py       the THP_MEM_ALLOC_ENABLE=1 re-run of the largest forwards
    <family>.py  one file per op family (saf, bang, interval, crown, p4, spp, attacks): ``OPS``,
               ``cases(config)``, ``TARGETS`` and optionally ``steps(config)``

Adding a family: write bench/<family>.py with ``OPS`` (the op names),
``cases(config)`` (yields cases.Case objects for the ops, dtypes and sizes of the
config; ``forward_only=True`` for an op without a backward), optionally
``steps(config)`` (cases.StepCase objects: training steps, or other model-level
passes, in variants) and
``TARGETS`` (a list of targets.Target, possibly empty), then add its name to
``FAMILIES`` in run.py.
"""

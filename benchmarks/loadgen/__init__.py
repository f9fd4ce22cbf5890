"""A load generator for chatd: virtual users, scenarios, measurements, reports.

``benchmarks/load.py`` is its command line. The parts, each a small module:

- :mod:`loadgen.scenarios`: what users ask and how they behave (declarative);
- :mod:`loadgen.users`: the virtual users, one WebSocket connection each;
- :mod:`loadgen.rig`: the chatd and simulator processes, /proc readings, faults;
- :mod:`loadgen.summary`: percentiles and per-run figures (pure);
- :mod:`loadgen.report`: the Markdown table (pure);
- :mod:`loadgen.progress`: the progress bar on stderr.

It imports chatd only for the simulator's rules (to know its timing floor) and
the process helpers of ``bench_pipeline.py``; it talks to chatd over the wire.
"""

"""A load generator for chatd: virtual users, scenarios, measurements, reports.

``benchmarks/load.py`` is its command line. The parts, each a small module:

- :mod:`loadgen.scenarios`: what users ask and how they behave (declarative);
- :mod:`loadgen.users`: the virtual users, one WebSocket connection each;
- :mod:`loadgen.rig`: the chatd and simulator processes, /proc readings, faults;
- :mod:`loadgen.processes`: starting a subprocess and reading its CPU and log;
- :mod:`loadgen.chat`: one chat over a WebSocket, timed, and replies summed;
- :mod:`loadgen.cpu`: CPU over an interval, of each process and of the machine;
- :mod:`loadgen.profiling`: py-spy attached to chatd, its stacks read back;
- :mod:`loadgen.script`: a script's flags, chatd's provenance, the results' record;
- :mod:`loadgen.summary`: per-run figures, their latencies by :mod:`loadgen.pipeline_stats` (pure);
- :mod:`loadgen.report`: the Markdown table (pure);
- :mod:`loadgen.progress`: the progress bar on stderr.

It talks to chatd over the wire. The ``bench_*.py`` scripts use its parts too, and
``loadgen/NAME_*.py`` holds the parts one scenario measures with (the end-to-end
questions and percentiles are :mod:`loadgen.pipeline_questions` and
:mod:`loadgen.pipeline_stats`). No module here imports a scenario; some import chatd's
own code where they need it (the simulator's rules, the knowledge base, logging, Redis,
a WebSocket helper).
"""

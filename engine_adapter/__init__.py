"""Engine side of the wire: vLLM scheduler subclasses, policy client, telemetry emitter.

vLLM is imported lazily (only by ``tailwise.engine_adapter.vllm``) so the client and emitter can
drive the simulator too.
"""

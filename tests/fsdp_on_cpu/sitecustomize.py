"""Test shim: accelerate on a CPU with FSDP, so FSDP2's code path runs over gloo without a GPU.

accelerate 1.15 turns FSDP on only for GPU-family backends: an `fsdp.yaml` launch on a CPU
trains as DDP. Put this folder first on PYTHONPATH and set FINETUNE_TEST_CPU_FSDP=1, and every
AcceleratorState that came out as MULTI_CPU under an FSDP launch is switched to FSDP with the
launch's plugin, exactly as accelerate does on a GPU. Only tests/test_fsdp_cpu.py uses it.
"""

import os

if os.environ.get("FINETUNE_TEST_CPU_FSDP") == "1":
    import accelerate.state as _state
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    _init = _state.AcceleratorState.__init__

    def _fsdp_on_cpu(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        wanted = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true"
        if wanted and self.distributed_type == DistributedType.MULTI_CPU:
            plugin = kwargs.get("fsdp_plugin") or getattr(self, "fsdp_plugin", None)
            plugin = plugin or FullyShardedDataParallelPlugin()
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":
                plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = plugin

    _state.AcceleratorState.__init__ = _fsdp_on_cpu

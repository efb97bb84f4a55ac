"""The shipped Accelerate configs (recipes/accelerate/) parse with accelerate's own loaders.

A typo in a key or a value must fail here, not on a user's 8-GPU machine: each file is read by
`load_config_from_file` (what `accelerate launch --config_file` calls, which rejects unknown
top-level keys), every key of its fsdp_config / deepspeed_config must be one `accelerate launch`
knows, the launch command is validated as `accelerate launch` would, and the FSDP settings build
a FullyShardedDataParallelPlugin from the environment the launcher would set.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO

CONFIGS = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))
EXPECTED = {
    "ddp.yaml": "MULTI_GPU",
    "fsdp.yaml": "FSDP",
    "deepspeed_zero2.yaml": "DEEPSPEED",
    "deepspeed_zero3.yaml": "DEEPSPEED",
    "multinode.yaml": "MULTI_GPU",
}


def test_every_documented_config_is_shipped():
    assert sorted(p.name for p in CONFIGS) == sorted(EXPECTED)


def _launch_args(path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", str(path), "-m", "finetune", "run", "r.yaml"])
    dests = {action.dest for action in parser._actions}
    return _validate_launch_command(args)[0], dests


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_with_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == EXPECTED[path.name]
    # the recipe's train.precision decides, not the launcher
    assert str(getattr(config.mixed_precision, "value", config.mixed_precision)) == "no"
    args, dests = _launch_args(path)
    for section in (config.fsdp_config, config.deepspeed_config):
        unknown = sorted(key for key in section if key not in dests)
        assert not unknown, f"{path.name}: keys accelerate launch does not know: {unknown}"
    assert args.num_processes == config.num_processes
    if path.name == "multinode.yaml":
        assert config.num_machines == 2 and config.main_process_ip and config.main_process_port


def test_fsdp_config_builds_the_plugin(monkeypatch):
    """The launcher's environment for fsdp.yaml builds an FSDP2 plugin with whole-state saving."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _ = _launch_args(REPO / "recipes" / "accelerate" / "fsdp.yaml")
    env = prepare_multi_gpu_env(args)
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)
    assert plugin.use_orig_params is None  # FSDP2 always keeps the original parameters


@pytest.mark.parametrize("name", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_deepspeed_configs_leave_accumulation_to_finetune(name):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "recipes" / "accelerate" / name))
    assert config.deepspeed_config["gradient_accumulation_steps"] == 1
    assert config.deepspeed_config["zero_stage"] == int(name[-6])

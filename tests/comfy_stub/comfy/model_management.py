"""Stand-in for ``comfy.model_management``: CPU device, an interrupt flag, and load bookkeeping."""

from __future__ import annotations

import torch


class InterruptProcessingException(Exception):
    pass


interrupt_processing = False
loaded_models_calls: list = []


def interrupt_current_processing(value: bool = True) -> None:
    global interrupt_processing
    interrupt_processing = value


def processing_interrupted() -> bool:
    return interrupt_processing


def throw_exception_if_processing_interrupted() -> None:
    global interrupt_processing
    if interrupt_processing:
        interrupt_processing = False
        raise InterruptProcessingException()


def get_torch_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False) -> None:
    loaded_models_calls.append(list(models))
    for patcher in models:
        patcher.model.to(patcher.load_device)


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False) -> bool:
    return torch.device(device or "cpu").type == "cuda"


def soft_empty_cache(force: bool = False) -> None:
    pass


free_memory_calls: list = []


def free_memory(memory_required, device, keep_loaded=[]) -> None:  # noqa: B006 - ComfyUI's signature
    """Records what a node asked ComfyUI to free (the real one unloads models until it fits)."""
    free_memory_calls.append((memory_required, device))

"""Forge's `backend` package (lllyasviel/stable-diffusion-webui-forge main dfdcbab), reduced to what
an extension's sampling hooks touch: the UNet patcher and the sampling function that calls the
functions registered with `set_model_sampler_post_cfg_function`. Signatures and arithmetic follow
the real files; memory management, ControlNet and LoRA are left out."""

"""huggingface_hub's ``PyTorchModelHubMixin`` for GFNet, writing and reading OUR format.

``GFNet.from_pretrained`` accepts every MODEL (folder, ``org/name[@rev]``, zoo name) and goes
through :func:`gfnet_cli.hub.resolve_model`, so downloads, caching and errors are the
CLI's. ``save_pretrained`` / ``push_to_hub`` write ``config.json`` from
``GFNetConfig.to_dict()`` (the model's current config, not the one it was built with),
``model.safetensors`` and our model card instead of the mixin's generic one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin

from gfnet_cli.card import CODE_URL, LIBRARY_NAME, PAPER_URL


class GFNetHubMixin(
    PyTorchModelHubMixin,
    library_name=LIBRARY_NAME,
    pipeline_tag="image-classification",
    license="mit",
    tags=["gfnet", "image-classification"],
    repo_url=CODE_URL,
    paper_url=PAPER_URL,
):
    """Hub loading and saving for :class:`gfnet_cli.models.gfnet.GFNet`."""

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        img_size: int | tuple[int, int] | None = None,
        map_location: str | torch.device | None = "cpu",
    ) -> Any:
        """Load a MODEL (local folder, Hub repo ``org/name[@rev]`` or zoo name), eval mode."""
        from gfnet_cli.hub import resolve_model
        from gfnet_cli.serialization import load_model_folder

        folder = resolve_model(
            str(pretrained_model_name_or_path),
            revision,
            token=token,
            force_download=force_download,
            local_files_only=local_files_only,
            cache_dir=cache_dir,
        )
        return load_model_folder(folder, img_size=img_size, device=map_location)

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | Path,
        *,
        config: Any = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Write a MODEL folder (config.json, model.safetensors, README.md card).

        ``config`` is accepted for the mixin's signature and ignored: the model's own
        ``GFNetConfig`` is always what is saved.
        """
        from gfnet_cli.serialization import save_model

        card = str(self.generate_model_card(**(model_card_kwargs or {})))
        save_model(self, save_directory, card=card)  # type: ignore[arg-type]
        if push_to_hub:
            return self.push_to_hub(
                repo_id or Path(save_directory).name,
                model_card_kwargs=model_card_kwargs,
                **push_to_hub_kwargs,
            )
        return None

    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        config: Any = None,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        branch: str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
    ) -> str | None:
        """Upload this model (config, safetensors, card) to ``repo_id`` in one commit.

        Goes through :func:`gfnet_cli.push.push_folder`, like ``gfnet push``. Returns the
        commit URL.
        """
        from gfnet_cli.push import push_folder

        card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
        with tempfile.TemporaryDirectory(prefix="gfnet-push-") as tmp:
            self.save_pretrained(tmp, model_card_kwargs=card_kwargs)
            result = push_folder(
                tmp,
                repo_id,
                private=bool(private),
                revision=branch,
                commit_message=commit_message,
                token=token,
            )
        return result.commit_url

    def _save_pretrained(self, save_directory: Path) -> None:
        from gfnet_cli.serialization import save_model

        save_model(self, save_directory)  # type: ignore[arg-type]

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """Our card (see :func:`gfnet_cli.card.model_card`); keyword arguments go to it."""
        from gfnet_cli.card import model_card

        text = model_card(self.config, num_params=self.num_params, **kwargs)  # type: ignore[attr-defined]
        return ModelCard(text)

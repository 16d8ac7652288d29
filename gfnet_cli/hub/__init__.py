"""The Hub side: MODEL names to folders, folders to models, and models back to the Hub.

- ``resolve``       MODEL arguments (folder, ``org/name[@rev]``, zoo name) -> folder, config or
                    model; ``load_model`` / ``create_model``; the public ``GFNet`` class
- ``serialization`` MODEL folders: safetensors + config.json, atomic writes, header checks
- ``convert``       the authors' ``.pth`` -> MODEL folder
- ``push``          a MODEL folder -> a Hub repository
- ``card``          the model card (README.md)
- ``remote_code``   the files transformers loads a MODEL folder with (config keys, remote code,
                    preprocessor_config.json); no transformers import
- ``transformers_classes`` GFNet as transformers classes (config, models, image processor):
                    what the remote code names; needs the ``transformers`` extra
- ``zoo_source``    where a zoo name's weights come from, and the sha256 pin
- ``cache``         cache folders, endpoint and offline mode read at call time, raw downloads
- ``errors``        the Hub's failures as our errors, one translator

Import from the submodules; this package re-exports nothing.
"""

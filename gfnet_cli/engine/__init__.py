"""How things run: the scoring loop, checkpoints, processes, training.

``inference`` (a MODEL ready to run),
``onnx_model`` (an exported file run where a GFNet runs), ``scoring`` (the one loop that scores a
model over batches), ``checkpoint``, ``distributed`` and ``train`` (finetune). Import from the
submodules.
"""

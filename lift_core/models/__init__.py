"""Getting a model: loading by alias, folder or hub id, the built-in tiny Llama, and the
checks that run before anything is loaded.

- :mod:`.loading`: ``load_model`` / ``load_tokenizer``, the linear layers of a model
  (``list_linear_layers``, ``layer_weight``, ``layers_table``).
- :mod:`.builtin`: the built-in model's recipe, shipped weights and rebuild.
- :mod:`.preflight`: output folders can be written, a run's memory fits (meta device).
"""

"""Ready integrations of alignkit's pieces into other libraries' models.

- ``alignkit.integrations.transformers.LlavaSEA``: SEA's align loss for a
  transformers ``LlavaForConditionalGeneration`` from the forward it already runs.
"""

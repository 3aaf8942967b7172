"""What each OpenAI-compatible endpoint adds to the pipeline: Chat Completions, Responses,
Embeddings (``base``: what they share).
"""

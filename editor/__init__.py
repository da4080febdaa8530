"""Fast instruction-driven video editing: MoViE (arXiv 2412.06578) and Clockwork Diffusion (arXiv 2312.08128).

The engine has no Gradio imports; ``ui/`` builds the app on top of it.
"""

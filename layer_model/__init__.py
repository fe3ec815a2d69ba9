"""LayerDiffusion in plain torch: transparent VAE decoder/encoder, alpha helpers, weight registry.

Only `host.py` imports ComfyUI.
"""

"""Models on the device: TFLite runtimes, model bundles and their manifests, the inference wrapper."""

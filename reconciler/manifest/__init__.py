"""DESIRED: YAML manifests loaded, validated and turned into token specs, with file and line."""

"""RunPod's REST API v2: a small client, the sizes a release needs there, and `podenv deploy`."""

"""What is RunPod's: its REST API v2 (a small client, the sizes a release needs there, `podenv deploy`)
and the network volume a worker must have (`mount`)."""

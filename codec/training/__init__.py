"""Training the model, its rate bounds on real images, and the datasets it learns from."""

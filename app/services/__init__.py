"""Long-lived objects the app keeps on app.state (the model cache)."""

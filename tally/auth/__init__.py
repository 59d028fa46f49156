"""Who may call the API: OAuth2 bearer tokens (tokens), API keys (apikeys) and the development
issuer a local stack signs its own tokens with (devissuer)."""

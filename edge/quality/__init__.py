"""Quality control on the gateway: QARTOD-style rules plus TinyML anomaly detection."""

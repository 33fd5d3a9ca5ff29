"""Getting predictions and outcomes into the loop: JSON records, Alertmanager/Grafana webhooks, a poller, replay."""

"""Write services of notifications: the outbox, the digest, immediate alerts, delivery."""

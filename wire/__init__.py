"""The wire contract: ``proto/tailwise/v1/policy.proto`` and its generated modules."""

"""Alerting: rules over what asgimon records, one engine across workers, channels that
deliver each transition once."""

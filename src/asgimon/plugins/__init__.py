"""asgimon's own plugins: alert channels, framework and database integrations.

Each is found through an entry-point group (``asgimon.channels`` for alert channels), the
same way a third party's is, so the core never imports a plugin by name.
"""

"""Preference studies: manifests and pre-rendering (studies), the ratings store (store), its migrations and stats."""

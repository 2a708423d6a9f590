"""Plain synchronous inference engines behind typing.Protocols (see ``protocols``)."""

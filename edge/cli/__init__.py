"""The ``leukoedge`` command line: thin click commands over the library, one module per command group."""

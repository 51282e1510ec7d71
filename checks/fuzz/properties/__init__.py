"""The fuzz properties, one module per target: each is a plain function of a case that raises on a violation (an
AssertionError describing it, or whatever the code under test raised), so pytest can call it directly."""

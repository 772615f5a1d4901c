"""What only the tests and the book build use: kept out of the capt package users install."""

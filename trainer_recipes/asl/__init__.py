"""ASL sign-language letters: the seed's CNN (the data and recipe come with the recipes issue)."""

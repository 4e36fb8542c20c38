"""dimo plugin for Meissonic (MeissonFlow/Meissonic): masked text-to-image teachers, distilled with Di[M]O."""

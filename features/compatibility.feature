@compatibility
Feature: A backup made under one version restores onto another as the target declares
  For each declared version, a unit with a distinctive state is backed up and the backup is restored onto
  a fresh unit of every declared version, and (where the target updates in place) onto the same unit after
  an update. Each cell must be what the target declares: restored, migrated by field name, or refused with
  a reason. The rows are the declared versions (tests/test_compat_feature.py keeps them in step).

  Scenario Outline: Backups of <target> made at <source> restore as declared
    Given the declared versions of <target>
    When backups made at <source> are restored onto every declared version
    Then every cell is what the rules declare
    And the row is attached to the report

    @target_multispeq
    Examples:
      | target    | source     |
      | multispeq | 1.05 (A)   |
      | multispeq | 1.05 (B)   |
      | multispeq | 1.06 (C50) |
      | multispeq | 1.10 (C75) |
      | multispeq | 1.11 (D)   |
      | multispeq | 1.15 (E)   |
      | multispeq | 1.17 (E)   |
      | multispeq | 1.19 (F)   |

    @target_bactobox
    Examples:
      | target   | source |
      | bactobox | 1.8.4  |
      | bactobox | 2.2.0  |
      | bactobox | 2.6.3  |
      | bactobox | 3.1.0  |

    @target_neuroomnet
    Examples:
      | target     | source |
      | neuroomnet | 3.9.4  |
      | neuroomnet | 4.0.2  |
      | neuroomnet | 4.2.0  |
      | neuroomnet | 5.0.0  |

    @target_mobiusflow
    Examples:
      | target     | source |
      | mobiusflow | 1.16.4 |
      | mobiusflow | 1.19.1 |
      | mobiusflow | 3004   |
      | mobiusflow | 3021   |

    @target_planktoscope
    Examples:
      | target       | source    |
      | planktoscope | v2.3      |
      | planktoscope | v2023.9.0 |
      | planktoscope | v2024.0.0 |
      | planktoscope | v2025.0.0 |
      | planktoscope | v2026     |

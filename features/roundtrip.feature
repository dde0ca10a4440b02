@roundtrip @destructive
Feature: A backup brings the unit back
  Scenario Outline: Round trip on <target> at <version> through <transport>
    Given a <target> unit running <version> reached through <transport>
    And the unit has a distinctive calibration
    When I back up the unit
    And the unit's settings are changed
    And I restore the backup
    Then a new backup equals the first, field by field

    @target_multispeq
    Examples:
      | target    | version | transport |
      | multispeq | 1.17    | serial    |
      | multispeq | 1.17    | visa      |
      | multispeq | 1.13    | serial    |
      | multispeq | 1.11    | serial    |
      | multispeq | 1.10    | serial    |
      | multispeq | 1.06    | serial    |
      | multispeq | 1.05    | serial    |

  @target_mobiusflow
  Scenario Outline: Round trip on mobiusflow at <version>
    Given a mobiusflow unit running <version>
    And the unit has a distinctive calibration
    When I back up the unit
    And the unit's settings are changed
    And I restore the backup
    Then a new backup equals the first, field by field

    Examples:
      | version |
      | 3021    |
      | 3004    |
      | 1.19.1  |
      | 1.16.4  |

  @target_neuroomnet
  Scenario Outline: Round trip on neuroomnet at <version>
    Given a neuroomnet unit running <version>
    And the unit has a distinctive calibration
    When I back up the unit
    And the unit's settings are changed
    And I restore the backup
    Then a new backup equals the first, field by field

    Examples:
      | version |
      | 3.9.4   |
      | 4.0.2   |
      | 4.2.0   |
      | 5.0.0   |

  @target_planktoscope
  Scenario Outline: Round trip on planktoscope at <version> over <link>
    Given a planktoscope unit running <version> reached over <link>
    And the unit has a distinctive calibration
    When I back up the unit
    And the unit's settings are changed
    And I restore the backup
    Then a new backup equals the first, field by field

    Examples:
      | version   | link |
      | v2023.9.0 | http |
      | v2024.0.0 | http |
      | v2025.0.0 | http |
      | v2.3      | ssh  |
      | v2023.9.0 | ssh  |
      | v2024.0.0 | ssh  |
      | v2025.0.0 | ssh  |
      | v2026     | ssh  |

  @target_planktoscope @sim_only
  Scenario: Datasets round trip on a v2026 planktoscope over HTTP
    Given a planktoscope unit running v2026 reached over http
    When I back up the unit
    And the unit's datasets are deleted
    And I restore the backup
    Then a new backup equals the first, field by field

  @target_bactobox
  Scenario Outline: Round trip on bactobox at <version>: every partition and the software version come back
    Given a bactobox unit running <version> reached through http
    And the unit has a distinctive calibration
    When I back up the unit
    And the unit's settings are changed
    And the unit takes a measurement
    And the firmware is flashed to <update> without a backup
    And I restore the backup
    Then a new backup equals the first, field by field
    And the unit runs <version> again

    Examples:
      | version | update |
      | 2.6.3   | 2.2.0  |
      | 2.2.0   | 2.6.3  |

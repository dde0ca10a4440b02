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

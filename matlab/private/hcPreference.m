function value = hcPreference(name, default)
    % HCPREFERENCE  A hessiancore setting (internal).
    %   VALUE = HCPREFERENCE(NAME, DEFAULT): the environment variable HESSIANCORE_<UPPER(NAME)> when set
    %   (per process: CI, tests), else the value saved by hessiancoreSetup (getpref group 'hessiancore'),
    %   else DEFAULT.
    value = getenv(['HESSIANCORE_', upper(name)]);
    if isempty(value) && ispref('hessiancore', name)
        value = getpref('hessiancore', name);
    end
    if isempty(value)
        value = default;
    end
end

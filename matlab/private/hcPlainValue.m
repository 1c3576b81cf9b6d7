function [value, ok] = hcPlainValue(value)
    % HCPLAINVALUE  A layer property as a plain value that can cross to Python (internal).
    %   [VALUE, OK] = HCPLAINVALUE(VALUE): numeric, logical and dlarray values become double arrays,
    %   string scalars char, string arrays and cellstr 1xN cellstr, char stays char. OK is false for
    %   anything else (function handles, objects, structs), which the exporter leaves out.
    ok = true;
    if isa(value, 'dlarray') || isnumeric(value) || islogical(value)
        value = hcToDouble(value);
    elseif ischar(value)
        value = reshape(value, 1, []);
    elseif isstring(value) && isscalar(value)
        value = char(value);
    elseif isstring(value) || iscellstr(value)
        value = reshape(cellstr(value), 1, []);
    else
        ok = false;
    end
end

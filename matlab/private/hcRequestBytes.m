function bytes = hcRequestBytes(value)
    % HCREQUESTBYTES  Bytes of a value's numeric and text data, at any depth of cells and structs (internal).
    %   What a -v7 .mat variable holding VALUE must store, without the small per-element headers.
    if iscell(value)
        bytes = 0;
        for i = 1:numel(value)
            bytes = bytes + hcRequestBytes(value{i});
        end
    elseif isstruct(value)
        bytes = 0;
        fields = fieldnames(value);
        for k = 1:numel(value)
            for i = 1:numel(fields)
                bytes = bytes + hcRequestBytes(value(k).(fields{i}));
            end
        end
    elseif ischar(value)
        bytes = 2 * numel(value);
    elseif islogical(value)
        bytes = numel(value);
    elseif isnumeric(value)
        info = whos('value');
        bytes = info.bytes;
    else
        bytes = 0;
    end
end
